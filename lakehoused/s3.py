"""The S3 connection both bucket edges share: a MinIO client for one bucket prefix, and S3
failures translated into the error tree (DESIGN §7).

Every S3 request of lakehoused goes through the `minio` client. Failures are translated at
this boundary: at start, into a ConfigError naming the setting to change (one line, as the
CLI prints it); while running, into a Transient the daemon retries with a backoff. A
message names the endpoint, the bucket and the key, and never a key of the credentials.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from urllib3.exceptions import (
    HTTPError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    SSLError,
    TimeoutError,
)

from lakehoused.config import S3Location
from lakehoused.errors import ConfigError, LakehousedError, Transient

log = logging.getLogger("lakehoused")
# urllib3 logs each quiet retry with the request's URL; the daemon reports a failure that
# lasts itself (health, /status, one log line), so these would only be noise in journald.
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
# A couple of quick retries hide a dropped keep-alive connection; a server that is really
# away is the daemon's to retry, with its own backoff (never a long block in here).
_RETRY = urllib3.Retry(
    total=2, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504), raise_on_status=False
)
MISSING = ("NoSuchKey", "NoSuchObject", "NoSuchVersion", "ResourceNotFound")
"""S3 error codes that mean: there is no object under that key."""


@dataclass(frozen=True)
class Listed:
    """One object of a listing: what tells one upload from the next."""

    key: str  # the whole key, prefix included
    size: int
    etag: str  # without quotes
    modified: float  # seconds since the epoch


class Bucket:
    """One bucket prefix on one S3 server, reached with the minio client.

    `setting` is the config key that names the prefix (`inbox.url`, `store.url`): failures
    at start name it, or the `[s3]` key at fault.
    """

    def __init__(self, location: S3Location, *, setting: str) -> None:
        self.location = location
        self.name = location.bucket
        self.prefix = location.prefix
        self.url = location.url
        self.setting = setting
        endpoint = location.endpoint
        self.endpoint = endpoint.endpoint
        self.client = Minio(
            endpoint.endpoint,
            access_key=endpoint.access_key.reveal(),
            secret_key=endpoint.secret_key.reveal(),
            secure=endpoint.secure,
            region=endpoint.region,
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
                maxsize=10,
                retries=_RETRY,
                cert_reqs="CERT_REQUIRED",
                ca_certs=certifi.where(),  # as the minio client's own default
            ),
        )

    def key(self, name: str) -> str:
        """The full key of `name` under the prefix."""
        return self.prefix + name

    def check(self) -> None:
        """At start: reach the server, sign in, find the bucket and list the prefix.

        ConfigError naming the setting at fault, in one line, otherwise.
        """
        try:
            # A GET, not a HEAD: a HEAD's refusal has no body to say which key is wrong.
            next(iter(self.client.list_objects(self.name, prefix=self.prefix)), None)
        except (MinioException, HTTPError, OSError, ValueError) as e:
            raise self.misconfigured(e) from None

    def misconfigured(self, e: BaseException, doing: str = "list") -> ConfigError:
        """What a failure at start says: the setting to change, and why."""
        endpoint = self.location.endpoint
        if isinstance(e, S3Error):
            code = e.code
            if code == "InvalidAccessKeyId":
                return ConfigError(
                    f"s3.access_key_env: the server at {self.endpoint} does not know the access "
                    f"key in {endpoint.access_key_env}; check that key"
                )
            if code == "SignatureDoesNotMatch":
                return ConfigError(
                    f"s3.secret_key_env: the server at {self.endpoint} refused the signature: the "
                    f"secret key in {endpoint.secret_key_env} does not match the access key"
                )
            if code == "NoSuchBucket":
                return ConfigError(
                    f"{self.setting}: bucket {self.name!r} does not exist at {self.endpoint}; "
                    f"create it or fix {self.setting}"
                )
            if code == "AccessDenied":
                return ConfigError(
                    f"{self.setting}: access denied to {doing} in {self.url} at "
                    f"{self.endpoint}; the keys need list, get, put and delete on it (see the "
                    "README's bucket policy)"
                )
            if code in (
                "AuthorizationHeaderMalformed",
                "InvalidRegion",
                "IllegalLocationConstraint",
            ):
                return ConfigError(
                    f"s3.region: the server at {self.endpoint} expects another region "
                    f"({code}); set s3.region to the bucket's region"
                )
            return ConfigError(
                f"{self.setting}: the server at {self.endpoint} refused to {doing} in "
                f"{self.url}: {code}"
            )
        if isinstance(e, InvalidResponseError | ServerError):
            hint = "" if endpoint.secure else " (if it serves https, set s3.secure = true)"
            return ConfigError(
                f"s3.endpoint: {self.endpoint} does not answer as an S3 server{hint}"
            )
        reason = _reason(e)
        if "TLS" in reason:
            return ConfigError(
                f"s3.secure: {reason} with {self.endpoint}; set s3.secure = false for a "
                "plain-http server, or fix its certificate"
            )
        return ConfigError(
            f"s3.endpoint: cannot reach {self.endpoint} ({reason}); check s3.endpoint and that "
            "the server is running"
        )

    def unavailable(self, e: BaseException, doing: str, kind: type[Transient]) -> LakehousedError:
        """A failure while running: a Transient of `kind`, retried by the daemon."""
        if isinstance(e, S3Error):
            return kind(f"{doing} at {self.endpoint}: the server answered {e.code}")
        return kind(f"{doing}: cannot reach {self.endpoint} ({_reason(e)})")

    def listing(self, prefix: str, *, recursive: bool) -> Iterator[Listed | str]:
        """The objects under `prefix` (Listed), and its sub-prefixes (str) when not recursive.

        Raises what the minio client raises: the caller translates.
        """
        for obj in self.client.list_objects(self.name, prefix=prefix, recursive=recursive):
            if obj.is_dir:
                yield obj.object_name
            else:
                modified = obj.last_modified.timestamp() if obj.last_modified else 0.0
                yield Listed(obj.object_name, obj.size or 0, (obj.etag or "").strip('"'), modified)


FAILURES = (MinioException, HTTPError, OSError)
"""What an S3 request through the minio client raises when it fails."""


def _reason(e: BaseException) -> str:
    """A short, secret-free reason for a transport failure."""
    cause: BaseException | None = e
    while isinstance(cause, MaxRetryError) and cause.reason is not None:
        cause = cause.reason
    if isinstance(cause, SSLError | ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(cause, NameResolutionError):
        return "host name not found"
    if isinstance(cause, NewConnectionError):
        inner = cause.__cause__ or cause.__context__
        if isinstance(inner, ConnectionRefusedError) or "refused" in str(cause).lower():
            return "connection refused"
        return "cannot connect"
    if isinstance(cause, TimeoutError):
        return "timed out"
    if isinstance(cause, ProtocolError | ConnectionError):
        return "connection broken"
    if isinstance(cause, InvalidResponseError | ServerError):
        return "not an S3 answer"
    return type(cause).__name__
