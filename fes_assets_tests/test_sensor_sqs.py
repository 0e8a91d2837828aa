"""SQS event mode: the bucket's own S3 event notifications, delivered by the object store to an
SQS queue (moto's server does both on one endpoint), drive the sensor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import psycopg
import pytest

from fes_assets.core import pause_points
from fes_assets_tests.conftest import ACCESS_KEY, SECRET_KEY, drivers, drivers_registry

APRIL_1 = datetime(2021, 4, 1, 6, tzinfo=UTC)
APRIL_2 = datetime(2021, 4, 2, 6, tzinfo=UTC)


@dataclass
class Queues:
    sqs: Any
    url: str  # the queue the sensor reads
    copy_url: str  # a second queue with the same notifications, to replay them from

    def waiting(self) -> int:
        """Messages in the queue, visible or being processed."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    def bodies_of_copy(self) -> list[str]:
        bodies = []
        while messages := self.sqs.receive_message(
            QueueUrl=self.copy_url, MaxNumberOfMessages=10
        ).get("Messages"):
            bodies += [m["Body"] for m in messages]
            self.sqs.delete_message_batch(
                QueueUrl=self.copy_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
        return bodies


@pytest.fixture
def queues(lab) -> Queues:
    sqs = boto3.client(
        "sqs",
        endpoint_url=lab.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    # Visible again at once after a failed tick: the test needs no wait for the timeout.
    attributes = {"VisibilityTimeout": "0"}
    urls = [
        sqs.create_queue(QueueName=f"{lab.bucket}-{name}", Attributes=attributes)["QueueUrl"]
        for name in ("events", "copy")
    ]
    arns = [
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        for url in urls
    ]
    lab.s3.put_bucket_notification_configuration(
        Bucket=lab.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
                for arn in arns
            ]
        },
    )
    return Queues(sqs, *urls)


def _sensor(lab, queues: Queues):
    # No reconcile pass after the first tick's: whatever the index learns, it learns from
    # the notifications.
    return lab.sensor(
        sqs_queue_url=queues.url, sqs_endpoint_url=lab.endpoint, reconcile_interval=10**9
    )


def _index(lab) -> tuple[list[tuple], list[tuple]]:
    history = lab.ids("entity_driver_id", "driver_id", "event_timestamp", "path")
    latest = lab.ids("latest_driver_id", "driver_id", "event_timestamp")
    return history, latest


def test_puts_overwrites_and_deletes_reach_the_index_through_s3_notifications(lab, queues):
    lab.use_registry(drivers_registry())
    sensor = _sensor(lab, queues)
    # Configuring the notification sent an s3:TestEvent: taken and ignored.
    assert queues.waiting() == 1
    assert not lab.tick(sensor).run_requests
    assert queues.waiting() == 0

    lab.put("d/a.parquet", drivers([1, 2], [APRIL_1] * 2))
    lab.put("d/b.parquet", drivers([3], [APRIL_2]))
    assert lab.settle(sensor) >= 1
    path = f"s3://{lab.bucket}/d/"
    assert _index(lab)[0] == [
        (1, APRIL_1, path + "a.parquet"),
        (2, APRIL_1, path + "a.parquet"),
        (3, APRIL_2, path + "b.parquet"),
    ]

    # An overwrite, a delete, and a key S3 escapes in its notification.
    lab.put("d/a.parquet", drivers([1, 5], [APRIL_1] * 2))
    lab.delete("d/b.parquet")
    odd = "d/c d+e%.parquet"
    lab.put(odd, drivers([7], [APRIL_2]))
    lab.settle(sensor)
    history, latest = _index(lab)
    assert history == [
        (1, APRIL_1, path + "a.parquet"),
        (5, APRIL_1, path + "a.parquet"),
        (7, APRIL_2, f"s3://{lab.bucket}/{odd}"),
    ]
    assert latest == [(1, APRIL_1), (5, APRIL_1), (7, APRIL_2)]
    assert queues.waiting() == 0

    # The same notifications again, newest first, and twice: nothing changes.
    bodies = queues.bodies_of_copy()
    assert len(bodies) == 6  # the test event, four puts (one an overwrite) and a delete
    for body in [*reversed(bodies), *bodies]:
        queues.sqs.send_message(QueueUrl=queues.url, MessageBody=body)
    lab.settle(sensor)
    assert _index(lab) == (history, latest)
    assert queues.waiting() == 0


def test_a_message_stays_in_the_queue_until_what_it_reported_is_catalogued(lab, queues):
    lab.use_registry(drivers_registry())
    sensor = _sensor(lab, queues)
    lab.tick(sensor)  # the test event
    lab.put("d/a.parquet", drivers([1], [APRIL_1]))
    lab.put("d/corrupt.parquet", b"not parquet at all")

    def outage(point: str, context: dict) -> None:
        if point == "object_listed" and context["key"] == "d/a.parquet":
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    with pause_points.installed(outage), pytest.raises(psycopg.OperationalError):
        lab.tick(sensor)
    # The message of the object that could not be catalogued waits for the next tick.
    assert queues.waiting() >= 1
    assert lab.sql("SELECT key FROM files WHERE key = 'd/a.parquet'") == []

    lab.settle(sensor)
    assert queues.waiting() == 0
    assert _index(lab)[1] == [(1, APRIL_1)]
    # A corrupt object is catalogued as failed, with its reason, and its message deleted.
    status, error = lab.sql("SELECT status, error FROM files WHERE key = 'd/corrupt.parquet'")[0]
    assert status == "failed" and error
