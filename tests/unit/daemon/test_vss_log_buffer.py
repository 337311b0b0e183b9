"""daemon.log_buffer: records are held while frozen and written, in order, after thaw."""

from __future__ import annotations

import logging

from hvguest.daemon.log_buffer import FreezeSafeHandler, LogHold, install_log_buffer


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def make_logger(name: str) -> tuple[logging.Logger, ListHandler]:
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    target = ListHandler()
    logger.addHandler(target)
    return logger, target


def test_records_pass_through_until_held() -> None:
    logger, target = make_logger("test.vss.buffer.pass")
    install_log_buffer(logger)
    logger.info("one %d", 1)
    assert target.lines == ["one 1"]


def test_held_records_are_written_in_order_after_release() -> None:
    logger, target = make_logger("test.vss.buffer.hold")
    hold = LogHold(install_log_buffer(logger))
    hold(True)
    values = {"n": 1}
    logger.info("frozen %s", values)
    values["n"] = 2
    logger.warning("still frozen")
    assert target.lines == []
    hold(False)
    assert target.lines == ["frozen {'n': 1}", "still frozen"]
    logger.info("after")
    assert target.lines[-1] == "after"


def test_overflow_keeps_the_newest_and_says_how_many_were_dropped() -> None:
    logger, target = make_logger("test.vss.buffer.overflow")
    logger.removeHandler(target)
    handler = FreezeSafeHandler(target, capacity=3)
    logger.addHandler(handler)
    handler.hold()
    for index in range(5):
        logger.info("record %d", index)
    handler.resume()
    assert target.lines == [
        "2 log record(s) dropped while frozen",
        "record 2",
        "record 3",
        "record 4",
    ]


def test_install_is_idempotent_and_release_without_hold_is_harmless() -> None:
    logger, _target = make_logger("test.vss.buffer.twice")
    first = install_log_buffer(logger)
    second = install_log_buffer(logger)
    assert first == second
    assert len(logger.handlers) == 1
    LogHold(second)(False)


def test_close_writes_what_is_still_held() -> None:
    logger, target = make_logger("test.vss.buffer.close")
    (handler,) = install_log_buffer(logger)
    handler.hold()
    logger.error("last words")
    handler.close()
    assert target.lines == ["last words"]
