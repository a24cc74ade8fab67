"""Reply-queue slots: a process holds the lowest free one; a process that dies, however, frees it for the next."""
import signal
import subprocess
import sys
import time

from web_tier.slots import claim_slot


def test_each_holder_gets_its_own_slot_and_a_released_one_is_claimed_again(tmp_path):
    first, second = claim_slot(tmp_path, "s"), claim_slot(tmp_path, "s")
    assert (first.number, second.number, first.owner) == (0, 1, "s0")
    first.release()
    again = claim_slot(tmp_path, "s")
    assert again.number == 0, "the replacement adopts the slot its predecessor left"
    assert claim_slot(tmp_path, "other-stack").number == 0
    for slot in (second, again):
        slot.release()


def test_a_killed_holder_frees_its_slot(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from web_tier.slots import claim_slot; "
                               f"claim_slot(__import__('pathlib').Path({str(tmp_path)!r}), 's'); print('held', "
                               "flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert claim_slot(tmp_path, "s").number == 1, "slot 0 is held by a live process"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        deadline = time.monotonic() + 5
        while (slot := claim_slot(tmp_path, "s")).number != 0 and time.monotonic() < deadline:
            slot.release()
        assert slot.number == 0
    finally:
        holder.kill()
