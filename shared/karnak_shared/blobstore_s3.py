"""The blob store in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, SeaweedFS): DESIGN.md section 17.

The same contract as the directory store (`karnak_shared.blobstore`), so a cluster needs no
ReadWriteMany volume:
- a blob is an object ``<prefix><reference>``, written by a PUT (or a multipart upload for a large
  one) that has returned before any message names it: S3 answers a PUT only once the object is stored,
  which is what the directory store's fsync gives;
- reading is by ranges: `open` starts one streaming GET and follows sequential reads on it; a seek
  elsewhere starts a new ranged GET there. The header is read first, the pixel data as it is copied:
  a 300 MB instance is never held whole, and an upload sends the parts it is given without copying them;
- `link` is a server-side copy (the bytes never pass through the service);
- the sweep's set-aside copies live under ``<prefix>swept/`` and come back when a message reads them.
All the S3 code of the gateway is in this module; credentials are never put in a message or a log.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
import botocore.config
import botocore.exceptions

from karnak_shared.blobstore import SET_ASIDE, StoredBlob, check_reference, is_reference, new_reference
from karnak_shared.errors import BlobMissing, BlobStoreError

if TYPE_CHECKING:
    from karnak_shared.config import BlobStoreConfig

# Up to this size an instance goes in one PUT (its parts joined: at most this much more memory).
_SINGLE_PUT_BYTES = 16 * 1024 * 1024
# Parts of a multipart upload (S3's smallest is 5 MiB), sent one after the other.
_UPLOAD_PART = 16 * 1024 * 1024
# A forward seek shorter than this reads on through the open stream rather than starting a new GET.
_SKIP_BYTES = 256 * 1024
_READ_BUFFER = 1024 * 1024
_MISSING = {"NoSuchKey", "404", "NotFound"}
_NETWORK_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _said(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))[:200]


class S3BlobStore:
    """Write-once objects under one key prefix of a bucket, addressed by the directory store's references."""

    def __init__(self, client: Any, bucket: str, prefix: str, endpoint: str | None = None) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        self._endpoint = endpoint

    @classmethod
    def from_config(cls, config: BlobStoreConfig) -> S3BlobStore:
        credentials: dict[str, str] = {}
        if config.access_key_id is not None and config.secret_access_key is not None:
            credentials = {
                "aws_access_key_id": config.access_key_id.get_secret_value(),
                "aws_secret_access_key": config.secret_access_key.get_secret_value(),
            }
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region or ("us-east-1" if config.endpoint_url else None),
            config=botocore.config.Config(
                # Path-style addressing: S3-compatible servers on a host name of their own rarely do
                # virtual-hosted buckets; AWS accepts both.
                s3={"addressing_style": "path" if config.endpoint_url else "auto"},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                max_pool_connections=32,
                # botocore's default since 1.36 (a CRC32 trailer in aws-chunked uploads) is refused by a
                # number of S3-compatible servers; the integrity of a blob is the message's digest's job.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
            **credentials,
        )
        return cls(client, config.bucket, config.key_prefix, config.endpoint_url)

    @property
    def location(self) -> str:
        where = f" at {self._endpoint}" if self._endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _key(self, reference: str) -> str:
        return f"{self.prefix}{check_reference(reference)}"

    def _aside_key(self, reference: str) -> str:
        return f"{self.prefix}{SET_ASIDE}/{check_reference(reference)}"

    def _error(self, exc: Exception, doing: str) -> BlobStoreError:
        if isinstance(exc, botocore.exceptions.ClientError):
            return BlobStoreError(f"cannot {doing} in {self.location}: {_code(exc)} {_said(exc)}".rstrip())
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return BlobStoreError(
                f"cannot {doing} in {self.location}: no S3 credentials "
                "(blob_store.access_key_id/secret_access_key, or AWS's environment)"
            )
        return BlobStoreError(f"cannot {doing} in {self.location}: {type(exc).__name__}")

    # --- the contract ----------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Reach the bucket; create it when the server has none of that name (and the credentials may)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except botocore.exceptions.ClientError as exc:
            if _code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                raise self._error(exc, "reach the bucket") from None
        except (botocore.exceptions.BotoCoreError, *_NETWORK_ERRORS) as exc:
            raise self._error(exc, "reach the bucket") from None
        try:
            self._client.create_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise BlobStoreError(
                    f"the bucket of {self.location} does not exist and cannot be created: {_code(exc)}"
                ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(exc, "create the bucket") from None

    def put(self, data: bytes | Sequence[bytes]) -> str:
        reference = new_reference()
        parts = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
        size = sum(len(part) for part in parts)
        try:
            if size <= _SINGLE_PUT_BYTES:
                body = parts[0] if len(parts) == 1 else b"".join(parts)
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(reference),
                    Body=bytes(body) if isinstance(body, memoryview) else body,
                )
            else:
                self._multipart_upload(self._key(reference), parts, size)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, *_NETWORK_ERRORS) as exc:
            raise self._error(exc, "write a blob") from None
        return reference

    def _multipart_upload(self, key: str, parts: Sequence[bytes | bytearray | memoryview], size: int) -> None:
        """Upload `parts` as one object in `_UPLOAD_PART` pieces, each read straight from the parts.

        s3transfer's managed upload copies a stream into chunks and reads several ahead (some 50 MB more
        for a 300 MB instance, measured); views of the caller's bytes cost nothing.
        """
        upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            done = []
            for number, start in enumerate(range(0, size, _UPLOAD_PART), start=1):
                length = min(_UPLOAD_PART, size - start)
                answer = self._client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload,
                    PartNumber=number,
                    Body=_PartsReader(parts, start, length),
                    ContentLength=length,
                )
                done.append({"PartNumber": number, "ETag": answer["ETag"]})
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
            )
        except BaseException:
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            except Exception:  # noqa: BLE001 - the first error is the one to tell; the server expires it
                pass
            raise

    def write(self, data: bytes | Sequence[bytes]) -> StoredObject:
        """Upload now: an object exists only once its PUT returned, so there is no later sync to overlap."""
        return StoredObject(self, self.put(data))

    def link(self, reference: str) -> str:
        target = new_reference()
        for attempt in (1, 2):
            try:
                self._client.copy_object(
                    Bucket=self.bucket,
                    Key=self._key(target),
                    CopySource={"Bucket": self.bucket, "Key": self._key(reference)},
                )
                return target
            except botocore.exceptions.ClientError as exc:
                if _code(exc) in _MISSING and attempt == 1 and self._bring_back(reference):
                    continue
                if _code(exc) in _MISSING:
                    raise BlobMissing(f"blob {reference} is missing from {self.location}") from None
                if _code(exc) in {"EntityTooLarge", "InvalidRequest"}:
                    # Over 5 GB one copy request cannot do it: the managed copy does it in parts.
                    self._client.copy(
                        {"Bucket": self.bucket, "Key": self._key(reference)}, self.bucket, self._key(target)
                    )
                    return target
                raise self._error(exc, f"link blob {reference}") from None
            except (botocore.exceptions.BotoCoreError, *_NETWORK_ERRORS) as exc:
                raise self._error(exc, f"link blob {reference}") from None
        raise BlobMissing(f"blob {reference} is missing from {self.location}")

    def get(self, reference: str) -> bytes:
        with self.open(reference) as stream:
            try:
                return stream.read()
            except OSError as exc:
                raise BlobStoreError(f"cannot read blob {reference}: {exc.strerror}") from None

    def open(self, reference: str) -> BinaryIO:
        key = self._key(reference)
        try:
            reader = _RangeReader(self._client, self.bucket, key, reference)
        except FileNotFoundError:
            if not self._bring_back(reference):
                raise BlobMissing(f"blob {reference} is missing from {self.location}") from None
            try:
                reader = _RangeReader(self._client, self.bucket, key, reference)
            except FileNotFoundError:
                raise BlobMissing(f"blob {reference} is missing from {self.location}") from None
        except OSError as exc:
            raise BlobStoreError(f"cannot read blob {reference} from {self.location}: {exc.strerror}") from None
        return cast(BinaryIO, _ObjectStream(reader))

    def source(self, reference: str) -> ObjectSource:
        check_reference(reference)
        return ObjectSource(self, reference)

    def delete(self, reference: str) -> None:
        """Remove the object and a set-aside copy of it in one request (deletes follow acks and may repeat)."""
        keys = [{"Key": self._key(reference)}, {"Key": self._aside_key(reference)}]
        try:
            answer = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, *_NETWORK_ERRORS) as exc:
            raise self._error(exc, f"delete blob {reference}") from None
        errors = [e for e in answer.get("Errors", []) if e.get("Code") not in _MISSING]
        if errors:
            raise BlobStoreError(f"cannot delete blob {reference} in {self.location}: {errors[0].get('Code')}")

    def blobs(self) -> Iterator[StoredBlob]:
        # The set-aside ones (under <prefix>swept/) do not have the form of a reference: left out.
        yield from self._listed(self.prefix)

    def set_aside_blobs(self) -> Iterator[StoredBlob]:
        yield from self._listed(f"{self.prefix}{SET_ASIDE}/")

    def _listed(self, prefix: str) -> Iterator[StoredBlob]:
        """The objects whose key is `prefix` and a reference (not another object an operator put there)."""
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    reference = str(item["Key"])[len(prefix) :]
                    if is_reference(reference):
                        yield StoredBlob(reference, item["LastModified"].timestamp(), int(item["Size"]))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, *_NETWORK_ERRORS) as exc:
            raise self._error(exc, "list blobs") from None

    def set_aside(self, reference: str) -> None:
        self._move(self._key(reference), self._aside_key(reference), f"set blob {reference} aside")

    def purge(self, reference: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._aside_key(reference))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, *_NETWORK_ERRORS) as exc:
            raise self._error(exc, f"remove blob {reference}") from None

    def _bring_back(self, reference: str) -> bool:
        """Return a set-aside blob to its place; whether there was one to bring back."""
        return self._move(self._aside_key(reference), self._key(reference), f"bring blob {reference} back")

    def _move(self, source: str, target: str, doing: str) -> bool:
        """Copy then delete (S3 has no rename); False when `source` is not there."""
        try:
            self._client.copy_object(Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": source})
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise self._error(exc, doing) from None
        except (botocore.exceptions.BotoCoreError, *_NETWORK_ERRORS) as exc:
            raise self._error(exc, doing) from None
        try:
            self._client.delete_object(Bucket=self.bucket, Key=source)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, *_NETWORK_ERRORS) as exc:
            raise self._error(exc, doing) from None
        return True


@dataclass(frozen=True)
class StoredObject:
    """An uploaded blob: already durable, so `sync` only returns its reference; `discard` deletes it."""

    store: S3BlobStore
    reference: str

    def sync(self) -> str:
        return self.reference

    def discard(self) -> None:
        try:
            self.store.delete(self.reference)
        except BlobStoreError:
            pass  # a stray object: the sweep finds it


class ObjectSource:
    """A blob as an instance reader opens it (`karnak_dicom`'s byte source), for one message's handling.

    A small blob (up to `_SINGLE_PUT_BYTES`) is fetched whole by the first `open` and kept: the handling
    of one message opens its instance several times (its head and digest, its header, its copy), and each
    would be a GET. A large one is streamed by ranged GETs each time, never held.
    """

    def __init__(self, store: S3BlobStore, reference: str) -> None:
        self.store = store
        self.reference = reference
        self._kept: bytes | None = None

    def open(self) -> BinaryIO:
        if self._kept is not None:
            return io.BytesIO(self._kept)
        stream = self.store.open(self.reference)
        size = stream.seek(0, os.SEEK_END)
        stream.seek(0)  # the GET that open started is still at 0: no request more
        if size > _SINGLE_PUT_BYTES:
            return stream
        try:
            with stream:
                self._kept = stream.read()
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise BlobMissing(f"blob {self.reference} is missing from {self.store.location}") from None
            raise BlobStoreError(f"cannot read blob {self.reference}: {exc.strerror}") from None
        return io.BytesIO(self._kept)


class _RangeReader(io.RawIOBase):
    """A seekable, read-only view of one object: one streaming GET per run of sequential reads.

    Failures are `OSError`s with an errno (`FileNotFoundError` when the object is gone), as a file's
    would be, so the DICOM readers tell a store's failure from a malformed instance.
    """

    def __init__(self, client: Any, bucket: str, key: str, reference: str) -> None:
        super().__init__()
        self._client = client
        self._bucket = bucket
        self._key = key
        self._reference = reference
        self._position = 0
        self._body: Any = None
        self._body_at = 0
        self._body = self._get(0)  # says at once whether the object is there, and its size
        self.size: int = self._size

    def _get(self, start: int) -> Any:
        try:
            answer = self._client.get_object(
                Bucket=self._bucket, Key=self._key, **({"Range": f"bytes={start}-"} if start else {})
            )
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(errno.ENOENT, f"blob {self._reference} is missing") from None
            if _code(exc) == "InvalidRange":
                self._body_at = start
                return None
            raise OSError(errno.EIO, f"{_code(exc)} reading blob {self._reference}") from None
        except (botocore.exceptions.BotoCoreError, *_NETWORK_ERRORS) as exc:
            raise OSError(errno.EIO, f"{type(exc).__name__} reading blob {self._reference}") from None
        if not start:
            self._size = int(answer["ContentLength"])
        self._body_at = start
        return answer["Body"]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._position + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._position = target
        return target

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._position >= self.size or not len(view):
            return 0
        self._follow()
        if self._body is None:
            return 0
        try:
            chunk = self._body.read(min(len(view), self.size - self._position))
        except (botocore.exceptions.BotoCoreError, *_NETWORK_ERRORS) as exc:
            self._drop()
            raise OSError(errno.EIO, f"{type(exc).__name__} reading blob {self._reference}") from None
        if not chunk:
            self._drop()
            raise OSError(errno.EIO, f"blob {self._reference} ended early at byte {self._position} of {self.size}")
        view[: len(chunk)] = chunk
        self._position += len(chunk)
        self._body_at += len(chunk)
        return len(chunk)

    def _follow(self) -> None:
        """Make the open GET deliver from the current position: read on, or start a ranged GET there."""
        if self._body is not None and self._body_at <= self._position < self._body_at + _SKIP_BYTES:
            while self._body_at < self._position:
                skipped = self._body.read(min(self._position - self._body_at, _READ_BUFFER))
                if not skipped:
                    break
                self._body_at += len(skipped)
            if self._body_at == self._position:
                return
        self._drop()
        self._body = self._get(self._position)

    def _drop(self) -> None:
        if self._body is not None:
            self._body.close()
        self._body = None

    def close(self) -> None:
        self._drop()
        super().close()


class _ObjectStream(io.BufferedIOBase):
    """A buffered stream over a `_RangeReader`, that is not an `io.BufferedReader`.

    pydicom takes a `BufferedReader` for a file it may reopen by name to read deferred values; any other
    stream it reads deferred values from itself, as it does for an inline body's `BytesIO`.
    """

    def __init__(self, raw: _RangeReader) -> None:
        super().__init__()
        self._inner = io.BufferedReader(raw, buffer_size=_READ_BUFFER)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._inner.read(size)

    def read1(self, size: int = -1) -> bytes:
        return self._inner.read1(size)

    def readinto(self, buffer: Any) -> int:
        return self._inner.readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        self._inner.close()
        super().close()


class _PartsReader(io.RawIOBase):
    """A window of the parts of an instance (a header and its pixel data, say) as one seekable stream.

    Read straight from the caller's buffers, never joined; seekable because botocore reads a body once to
    sign it and again to send it (and again on a retry).
    """

    def __init__(self, parts: Sequence[bytes | bytearray | memoryview], start: int, length: int) -> None:
        super().__init__()
        self._parts = [memoryview(part).cast("B") for part in parts if len(part)]
        self._start = start
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._length - self._position)
        filled = 0
        at = self._start + self._position  # offset in the concatenated parts
        for part in self._parts:
            if filled == wanted:
                break
            if at >= len(part):
                at -= len(part)
                continue
            count = min(wanted - filled, len(part) - at)
            view[filled : filled + count] = part[at : at + count]
            filled += count
            at = 0
        self._position += filled
        return filled
