"""The wire format of SPEC §8: init in both eras, every bad-input code, the media header."""

import base64
import json

import pytest

from agenthuman_local import protocol as p


def _init_b(**config):
    return json.dumps(
        {"type": "session.init", "config": {"session_id": "sess_1", "access_token": "t", **config}}
    )


def _init_c(**fields):
    return json.dumps(
        {"type": "session.init", "session_id": "sess_1", "session_token": "t", **fields}
    )


def test_init_era_b_reads_config_object():
    init = p.parse_init(_init_b(video_width=640, video_height=480, fps=30, sample_rate=24000))
    assert (init.era, init.session_id, init.token) == ("B", "sess_1", "t")
    assert (init.video_width, init.video_height, init.fps, init.sample_rate_hz) == (
        640,
        480,
        30,
        24000,
    )


def test_init_era_c_reads_top_level_and_output():
    init = p.parse_init(_init_c(output={"video": "jpeg", "audio": True}))
    assert init.era == "C"
    assert init.sample_rate_hz == 16000
    assert init.output == p.OutputOptions(video_jpeg=True, audio=True)


def test_init_output_video_rgb24():
    init = p.parse_init(_init_b(output={"video": "rgb24"}))
    assert init.output == p.OutputOptions(video_rgb24=True)
    assert not init.output.video_jpeg and p.KIND_VIDEO_RGB24 == 3


def test_init_accepts_either_token_name_in_either_era():
    raw = {"type": "session.init", "config": {"session_id": "s", "session_token": "x"}}
    assert p.parse_init(json.dumps(raw)).token == "x"
    assert p.parse_init(_init_c(access_token="y", session_token=None)).token == "y"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1]",
        json.dumps({"type": "agent.speak", "audio": ""}),
        _init_b(video_width=127),
        _init_b(video_width=641),
        _init_b(video_height=1922),
        _init_b(fps=61),
        _init_b(sample_rate=7999),
        _init_b(output={"video": "png"}),
        json.dumps({"type": "session.init", "config": {"session_id": "s"}}),
        json.dumps({"type": "session.init", "session_token": "t"}),
    ],
)
def test_bad_first_message_is_a_protocol_error(text):
    with pytest.raises(p.ProtocolError) as info:
        p.parse_init(text)
    assert info.value.code == p.E_PROTOCOL


def test_first_message_wording_is_hosted():
    with pytest.raises(p.ProtocolError, match="First message must be session.init"):
        p.parse_init(json.dumps({"type": "agent.speak"}))


def _speak(pcm: bytes, **extra):
    return json.dumps({"type": "agent.speak", "audio": base64.b64encode(pcm).decode(), **extra})


def test_speak_decodes_base64_and_rate():
    cmd = p.parse_text(_speak(b"\x01\x00\x02\x00", sample_rate=48000))
    assert cmd == p.Speak(b"\x01\x00\x02\x00", 48000)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", p.E_INVALID_JSON),
        ('"a string"', p.E_INVALID_JSON),
        (json.dumps({"type": "agent.dance"}), p.E_UNKNOWN_TYPE),
        (json.dumps({"no": "type"}), p.E_UNKNOWN_TYPE),
        (json.dumps({"type": "agent.speak", "audio": "@@@"}), p.E_INVALID_AUDIO),
        (json.dumps({"type": "agent.speak"}), p.E_INVALID_AUDIO),
        (_speak(b"\x01\x00\x02"), p.E_ODD_BYTE_COUNT),
        (_speak(b"\x01\x00", sample_rate=96000), p.E_INVALID_SAMPLE_RATE),
        (_speak(b"\x01\x00", sample_rate="16k"), p.E_INVALID_SAMPLE_RATE),
    ],
)
def test_bad_messages_name_their_problem(text, code):
    with pytest.raises(p.ProtocolError) as info:
        p.parse_text(text)
    assert info.value.code == code
    assert info.value.message


@pytest.mark.parametrize(
    ("kind", "cmd"),
    [
        ("agent.speak_end", p.SpeakEnd()),
        ("agent.interrupt", p.Interrupt()),
        ("agent.start_listening", p.Listening(True)),
        ("agent.stop_listening", p.Listening(False)),
        ("session.keep_alive", p.KeepAlive()),
    ],
)
def test_simple_commands(kind, cmd):
    assert p.parse_text(json.dumps({"type": kind})) == cmd


def test_binary_pcm_needs_even_bytes():
    assert p.parse_binary(b"\x00\x00", 24000) == p.Speak(b"\x00\x00", 24000)
    with pytest.raises(p.ProtocolError) as info:
        p.parse_binary(b"\x00", 16000)
    assert info.value.code == p.E_ODD_BYTE_COUNT


def test_media_header_is_16_bytes_little_endian():
    msg = p.pack_media(p.KIND_VIDEO_JPEG, 2**40 + 3, 77, b"JPEG")
    assert len(msg) == 16 + 4
    assert msg[0] == 1 and msg[1:4] == b"\x00\x00\x00"
    assert int.from_bytes(msg[4:12], "little") == 2**40 + 3
    assert int.from_bytes(msg[12:16], "little") == 77
    assert p.unpack_media(msg) == (1, 2**40 + 3, 77, b"JPEG")


def test_close_codes():
    assert (p.CLOSE_REPLACED, p.CLOSE_BAD_TOKEN, p.CLOSE_PROTOCOL) == (4000, 4001, 4002)
    assert (p.CLOSE_NOT_STARTED, p.CLOSE_UNKNOWN_SESSION, p.CLOSE_ENDED) == (4003, 4004, 4009)


def test_interrupt_confirmed_shape():
    assert p.interrupt_confirmed(None, 0, 120) == {
        "type": "agent.interrupt.confirmed",
        "utterance_id": None,
        "played_ms": 0,
        "dropped_ms": 120,
    }
