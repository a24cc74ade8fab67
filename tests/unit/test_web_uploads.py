import io

import pytest
from PIL import Image
from werkzeug.datastructures import FileStorage, MultiDict

from web_tier.uploads import UploadError, check_image, image_name, read_upload


def jpeg(size=(64, 48), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


def files(*entries):
    return MultiDict([(field, FileStorage(io.BytesIO(data), filename=name)) for field, name, data in entries])


@pytest.mark.parametrize("field", ["inputFile", "myfile", "anything"])
def test_one_file_in_any_field(field):
    upload = read_upload(files((field, "cat.jpg", jpeg())), 10_000_000)
    assert upload.name == "cat" and len(upload.digest) == 64


@pytest.mark.parametrize("entries, status, text", [
    ((), 400, "no file"),
    ((("inputFile", "a.jpg", jpeg()), ("myfile", "b.jpg", jpeg())), 400, "exactly one file"),
    ((("inputFile", "empty.jpg", b""),), 400, "empty"),
    ((("inputFile", "notes.jpg", b"just some text, not pixels"),), 415, "not an image"),
    ((("inputFile", "cut.jpg", jpeg((640, 480))[:600]),), 400, "truncated"),
])
def test_bad_uploads_are_refused_with_a_clear_4xx(entries, status, text):
    with pytest.raises(UploadError) as error:
        check_image(read_upload(files(*entries), 10_000_000).data)
    assert error.value.status == status
    assert text in str(error.value).lower()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_a_good_image_passes_the_check(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (20, 140, 60)).save(buffer, fmt)
    assert check_image(read_upload(files(("inputFile", f"ok.{fmt.lower()}", buffer.getvalue())), 10_000_000).data) \
        is None


def test_the_check_decodes_the_pixels_but_leaves_the_resize_and_crop_to_the_worker(monkeypatch):
    import hybrid.core.decoding as preprocess

    def not_here(image):
        raise AssertionError("the web tier must not resize and crop: the worker does")
    monkeypatch.setattr(preprocess, "_centre_crop", not_here)
    check_image(jpeg((640, 480)))
    with pytest.raises(UploadError, match="(?i)truncated"):
        check_image(jpeg((640, 480))[:600])


def test_an_upload_over_the_limit_is_413():
    with pytest.raises(UploadError) as error:
        read_upload(files(("inputFile", "big.jpg", jpeg((800, 600)))), 1000)
    assert error.value.status == 413


@pytest.mark.parametrize("filename, expected", [
    ("cat.jpg", "cat"), ("test_07.JPEG", "test_07"), ("../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot"),
    ("a\x00b\x1fc\nd.png", "abcd"), ("..", "image"), ("", "image"), (".bashrc", "bashrc"),
    ("x" * 1000 + ".jpg", "x" * 120), ("dog photo.v2.png", "dog photo.v2"), ("ça va?.jpg", "a va"),
])
def test_names_are_sanitised(filename, expected):
    name = image_name(filename)
    assert name == expected
    assert "/" not in name and "\\" not in name and ".." not in name and len(name) <= 120
    assert all(ch.isprintable() for ch in name)
