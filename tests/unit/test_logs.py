"""The JSON request log: the direct write and the logging module give the same line."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import UTC, datetime

import pytest

from fleetca import logs
from fleetca.logs import JsonLinesHandler, log_info_event

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")

EVENTS = {
    "request": {"method": "POST", "path": "/acme/default/new-order", "status": 201, "account": "a1",
                "problem": None, "ms": 1.25},
    "problem": {"method": "POST", "path": "/acme/default/finalize/o1", "status": 403,
                "problem": "unauthorized", "ms": 0.5},
    "integer beyond 64 bits": {"serial": 2**70},
    "value without a JSON form": {"at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)},
    "nested": {"limits": {"per_hour": 10, "names": ["a", "b"]}},
    "non-ASCII": {"path": "/acme/d\u00e9faut"},
    "empty": {},
}


@pytest.fixture
def logger(request):
    """A logger of its own with the handler `fleetca serve` installs, writing to a string stream.

    It is not registered with the logging module and has no parent, so the
    capturing handlers that pytest adds to the root logger and to every
    registered logger that does not propagate stay out of its way.
    """
    logger = logging.Logger(f"fleetca.test_logs.{request.node.name}", logging.INFO)
    logger.addHandler(JsonLinesHandler(io.StringIO()))
    return logger


def _lines(logger: logging.Logger) -> list[dict]:
    stream = next(handler.stream for handler in logger.handlers if isinstance(handler, logging.StreamHandler))
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _no_record(*args, **kwargs):
    raise AssertionError("the direct write built a LogRecord")


@pytest.mark.parametrize("event", list(EVENTS.values()), ids=list(EVENTS))
def test_direct_line_equals_logging_line(logger, monkeypatch, event):
    logger.info("request", extra={"event": event})

    monkeypatch.setattr(logging.Logger, "makeRecord", _no_record)
    log_info_event(logger, "request", event)

    through_logging, direct = _lines(logger)
    assert TIME.match(direct.pop("time"))
    through_logging.pop("time")
    assert direct == through_logging


def _with_filter(logger: logging.Logger) -> None:
    logger.addFilter(lambda record: True)


def _with_handler_filter(logger: logging.Logger) -> None:
    logger.handlers[0].addFilter(lambda record: True)


def _with_second_handler(logger: logging.Logger) -> None:
    logger.handlers.insert(0, logging.NullHandler())


def _with_other_handler_type(logger: logging.Logger) -> None:
    plain = logging.StreamHandler(logger.handlers[0].stream)
    plain.setFormatter(logs.JsonFormatter())
    logger.handlers[:] = [plain]


def _propagating_to_parent(logger: logging.Logger) -> None:
    # The parent's handler is a second one on the record's way.
    logger.parent = logging.Logger("fleetca.test_logs")
    logger.parent.addHandler(logging.NullHandler())


SETUPS_THAT_NEED_A_RECORD = {
    "filter on the logger": _with_filter,
    "filter on the handler": _with_handler_filter,
    "second handler": _with_second_handler,
    "other handler type": _with_other_handler_type,
    "propagating to another handler": _propagating_to_parent,
}


@pytest.mark.parametrize("setup", list(SETUPS_THAT_NEED_A_RECORD.values()), ids=list(SETUPS_THAT_NEED_A_RECORD))
def test_other_setups_go_through_logging(logger, monkeypatch, setup):
    setup(logger)
    records = []
    make_record = logging.Logger.makeRecord

    def counting(self, *args, **kwargs):
        record = make_record(self, *args, **kwargs)
        records.append(record)
        return record

    monkeypatch.setattr(logging.Logger, "makeRecord", counting)
    log_info_event(logger, "request", {"status": 200})

    assert len(records) == 1
    assert records[0].event == {"status": 200}
    line = _lines(logger)[0]
    assert line["status"] == 200
    assert line["message"] == "request"


@pytest.mark.parametrize("silence", ["level", "disabled logger", "handler level"])
def test_silenced_logger_writes_nothing(logger, silence):
    if silence == "level":
        logger.setLevel(logging.WARNING)
    elif silence == "disabled logger":
        logger.disabled = True
    else:
        logger.handlers[0].setLevel(logging.WARNING)
    log_info_event(logger, "request", {"status": 200})
    assert logger.handlers[0].stream.getvalue() == ""


INSTANTS_IN_NANOSECONDS = [
    1_764_936_000_000_000_000,  # a whole second
    1_764_936_000_999_999_999,  # the last nanosecond of that second
    1_764_936_001_000_500_000,  # the next second, so the date and time are formatted again
    1_764_936_001_123_456_789,  # the same second again
    1_764_936_000_500_000_000,  # an earlier second, as after the system clock was set back
]


def test_clock_matches_isoformat(monkeypatch):
    clock = logs._MillisecondClock()
    for nanoseconds in INSTANTS_IN_NANOSECONDS:
        monkeypatch.setattr(logs.time, "time_ns", lambda: nanoseconds)
        seconds, rest = divmod(nanoseconds, 1_000_000_000)
        instant = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)
        assert clock.now() == instant.isoformat(timespec="milliseconds"), nanoseconds


def test_write_failure_is_reported_not_raised(logger, monkeypatch):
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    reported = []
    handler = logger.handlers[0]
    handler.setStream(Broken())
    monkeypatch.setattr(handler, "handleError", reported.append)
    log_info_event(logger, "request", {"status": 200})
    assert len(reported) == 1
    assert reported[0].name == logger.name


def test_value_without_json_form_is_reported(logger, monkeypatch):
    circular: dict = {}
    circular["self"] = circular
    reported = []
    monkeypatch.setattr(logger.handlers[0], "handleError", reported.append)
    log_info_event(logger, "request", {"limits": circular})
    assert len(reported) == 1
    assert logger.handlers[0].stream.getvalue() == ""


def test_handler_on_parent_written_directly(monkeypatch):
    # As in `fleetca serve`: the handler is on an ancestor, and the request log's logger has none.
    parent = logging.Logger("fleetca.test_logs.parent", logging.INFO)
    parent.addHandler(JsonLinesHandler(io.StringIO()))
    child = logging.Logger("fleetca.test_logs.parent.child")
    child.parent = parent
    monkeypatch.setattr(logging.Logger, "makeRecord", _no_record)
    log_info_event(child, "request", {"status": 200})
    line = _lines(parent)[0]
    assert line["logger"] == "fleetca.test_logs.parent.child"
    assert line["status"] == 200


def test_propagation_stops_at_handler(monkeypatch):
    # A logger that does not propagate hides its parent's handler.
    parent = logging.Logger("fleetca.test_logs.other", logging.INFO)
    parent.addHandler(logging.NullHandler())
    child = logging.Logger("fleetca.test_logs.other.child", logging.INFO)
    child.addHandler(JsonLinesHandler(io.StringIO()))
    child.parent = parent
    child.propagate = False
    monkeypatch.setattr(logging.Logger, "makeRecord", _no_record)
    log_info_event(child, "request", {"status": 200})
    assert _lines(child)[0]["status"] == 200
