"""Amazon S3 Event Notifications read from an SQS queue (directly, or through an SNS topic
subscribed to it). A message is deleted only once what it reported is catalogued; until then
it reappears after the queue's visibility timeout, so nothing is lost and a repeat is
harmless (each record only says where to look)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import urlparse

import boto3
from botocore.config import Config

from .object_store import ObjectStoreSettings

# A receive returns at most this many messages (SQS's limit).
BATCH = 10


@dataclass(frozen=True)
class QueueMessage:
    receipt: str
    records: list[dict] = field(default_factory=list)
    test_event: bool = False  # s3:TestEvent, sent when a notification is configured
    unreadable: str | None = None  # why the body is not an S3 notification

    @classmethod
    def parse(cls, receipt: str, body: str) -> QueueMessage:
        try:
            data = json.loads(body)
            if isinstance(data, dict) and data.get("Type") == "Notification":
                data = json.loads(data.get("Message", ""))  # delivered through SNS
        except (json.JSONDecodeError, TypeError) as error:
            return cls(receipt, unreadable=f"not JSON ({error})")
        if not isinstance(data, dict):
            return cls(receipt, unreadable="not a JSON object")
        if data.get("Event") == "s3:TestEvent":
            return cls(receipt, test_event=True)
        records = data.get("Records")
        if not isinstance(records, list):
            return cls(receipt, unreadable="no Records")
        return cls(receipt, records=[r for r in records if isinstance(r, dict)])


def _region_of(queue_url: str) -> str | None:
    """The region an AWS queue URL names: `sqs.<region>.amazonaws.com[.cn]`, or the legacy
    `<region>.queue.amazonaws.com`; None for other endpoints."""
    parts = (urlparse(queue_url).hostname or "").split(".")
    if "amazonaws" not in parts or len(parts) < 4:
        return None
    if parts[0] == "sqs":
        return parts[1]
    if parts[1] == "queue":
        return parts[0]
    return None


class EventQueue:
    """An SQS queue of S3 event notifications, with the object store's credentials."""

    def __init__(
        self, store: ObjectStoreSettings, queue_url: str, endpoint_url: str | None = None
    ) -> None:
        self.queue_url = queue_url
        self._client = boto3.session.Session().client(
            "sqs",
            endpoint_url=endpoint_url or None,
            region_name=_region_of(queue_url) or store.region or "us-east-1",
            aws_access_key_id=store.access_key_id,
            aws_secret_access_key=store.secret_access_key,
            aws_session_token=store.session_token,
            config=Config(
                retries={"mode": "adaptive", "max_attempts": 5},
                connect_timeout=10,
                read_timeout=30,
            ),
        )

    def receive(self, wait_seconds: int = 0) -> list[QueueMessage]:
        """Up to `BATCH` messages; `wait_seconds` > 0 long-polls (every server answers, where
        a short poll may answer empty while messages wait)."""
        response = self._client.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=BATCH, WaitTimeSeconds=wait_seconds
        )
        return [
            QueueMessage.parse(m["ReceiptHandle"], m.get("Body", ""))
            for m in response.get("Messages", [])
        ]

    def delete(self, messages: list[QueueMessage]) -> None:
        """Acknowledge messages whose records are catalogued."""
        for start in range(0, len(messages), BATCH):
            chunk = messages[start : start + BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)]
            # An entry that fails (its receipt expired: the tick outlived the visibility
            # timeout) comes again and is applied again, which is harmless.
            self._client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)

    def release(self, messages: list[QueueMessage]) -> None:
        """Messages a tick had no budget left for: visible again at once, for the next tick,
        rather than after the visibility timeout."""
        for start in range(0, len(messages), BATCH):
            chunk = messages[start : start + BATCH]
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ]
            self._client.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
