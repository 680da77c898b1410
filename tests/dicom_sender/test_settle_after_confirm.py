"""The dicom-sender acks a delivered instance only once its event is confirmed, and in order."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from karnak_dicom_sender.settling import SettleAfterConfirm
from karnak_shared.broker import Delivery, PendingConfirm, Settlement, Verdict
from karnak_shared.errors import BrokerUnavailable, PublishOutcomeUnknown


def delivery(tag: int) -> Delivery:
    return Delivery("karnak.send.dicom.pacs", "karnak.send.dicom.pacs", tag, False, {}, b"", 1)


def pending() -> tuple[Future[None], PendingConfirm]:
    future: Future[None] = Future()
    future.set_running_or_notify_cancel()
    return future, PendingConfirm(future, "karnak.events/transfer.sent.pacs", timeout=5)


class Recorder:
    def __init__(self) -> None:
        self.settled: list[tuple[int, Settlement]] = []
        self.deleted: list[str] = []
        self.done = threading.Event()

    def settle(self, d: Delivery, settlement: Settlement) -> None:
        self.settled.append((d.delivery_tag, settlement))
        self.done.set()

    def delete(self, blob: str) -> None:
        self.deleted.append(blob)


def test_a_delivery_is_acked_and_its_blob_deleted_only_after_the_confirm() -> None:
    recorder = Recorder()
    settler = SettleAfterConfirm(recorder.settle, recorder.delete).start()
    future, confirm = pending()

    settler.submit(delivery(1), Verdict(Settlement.ACK, delete_blob="ab/blob.dcm", after=confirm))
    assert not recorder.done.wait(0.2)  # no confirm yet: nothing settled, the blob stays
    future.set_result(None)
    settler.stop()

    assert recorder.settled == [(1, Settlement.ACK)]
    assert recorder.deleted == ["ab/blob.dcm"]


def test_a_refused_event_requeues_the_delivery_and_keeps_its_blob() -> None:
    recorder = Recorder()
    settler = SettleAfterConfirm(recorder.settle, recorder.delete).start()
    future, confirm = pending()
    future.set_exception(BrokerUnavailable("RabbitMQ refused the message"))

    settler.submit(delivery(1), Verdict(Settlement.ACK, delete_blob="ab/blob.dcm", after=confirm))
    settler.stop()

    assert recorder.settled == [(1, Settlement.REQUEUE)]
    assert recorder.deleted == []


def test_deliveries_are_settled_in_the_order_they_were_handed_over() -> None:
    recorder = Recorder()
    settler = SettleAfterConfirm(recorder.settle, recorder.delete).start()
    futures = []
    for tag in (1, 2, 3):
        future, confirm = pending()
        futures.append(future)
        settler.submit(delivery(tag), Verdict(Settlement.ACK, after=confirm))
    for future in reversed(futures):  # confirms arriving in any order
        future.set_result(None)
    settler.stop()

    assert [tag for tag, _ in recorder.settled] == [1, 2, 3]


def test_a_message_the_publisher_never_took_is_refused_not_of_unknown_outcome() -> None:
    # Cancelled before the publisher thread took it: certainly never published, so the receiver may
    # delete the blob it wrote for it (an unknown outcome would keep it forever).
    future: Future[None] = Future()
    confirm = PendingConfirm(future, "karnak.ingest/karnak.received", timeout=0.05)

    with pytest.raises(BrokerUnavailable, match="could not take the message") as caught:
        confirm.wait()

    assert not isinstance(caught.value, PublishOutcomeUnknown)
    assert future.cancelled()


def test_a_message_being_published_when_the_wait_ends_is_of_unknown_outcome() -> None:
    future: Future[None] = Future()
    future.set_running_or_notify_cancel()  # the publisher thread has it
    confirm = PendingConfirm(future, "karnak.ingest/karnak.received", timeout=0.05)

    with pytest.raises(PublishOutcomeUnknown):
        confirm.wait()
