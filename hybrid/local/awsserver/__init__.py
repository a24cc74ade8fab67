"""The local AWS-compatible server (moto, with the project's SQS fixes), run as a subprocess on 127.0.0.1."""
from hybrid.local.awsserver.process import EmulatorInfo, emulator_status, start_emulator, stop_emulator

__all__ = ["EmulatorInfo", "emulator_status", "start_emulator", "stop_emulator"]
