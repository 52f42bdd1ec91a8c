"""The coordinator's admin API as the demo uses it."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


from coordinator_service.demo.errors import DemoFailed


class Api:
    """The admin API at ``url``/api/v1; reads are retried on transport errors and 5xx, errors become DemoFailed."""

    def __init__(self, url: str, token: str, *, checkpoint: Any) -> None:
        import httpx

        self.http: httpx.Client = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60.0
        )
        self.checkpoint = checkpoint

    def close(self) -> None:
        self.http.close()

    def get(self, path: str) -> Any:
        return self._call("GET", path, retries=5)

    def post(self, path: str, body: dict[str, Any] | None) -> Any:
        return self._call("POST", path, retries=0, json=body)

    def download(self, path: str, target: Path) -> str:
        """Stream a file to ``target``; returns its sha256, checked against the coordinator's."""
        import httpx

        digest = hashlib.sha256()
        try:
            with self.http.stream("GET", path) as response:
                if response.status_code != 200:
                    response.read()
                    raise DemoFailed(f"GET {path}: {_describe(response)}")
                with target.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        handle.write(chunk)
                expected = response.headers.get("x-content-sha256")
        except httpx.TransportError as exc:
            raise DemoFailed(f"GET {path}: {exc}") from exc
        if expected is not None and expected != digest.hexdigest():
            raise DemoFailed(f"GET {path}: the download's sha256 differs from the coordinator's")
        return digest.hexdigest()

    def _call(self, method: str, path: str, *, retries: int, **kwargs: Any) -> Any:
        import httpx

        for attempt in range(retries + 1):
            self.checkpoint()
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == retries:
                    raise DemoFailed(f"{method} {path}: the coordinator is unreachable: {exc}") from exc
                time.sleep(1.0)
                continue
            if response.status_code >= 500 and attempt < retries:
                time.sleep(1.0)
                continue
            if response.status_code == 401:
                raise DemoFailed(f"{method} {path}: the coordinator refused the admin token: {_describe(response)}")
            if response.status_code >= 400:
                raise DemoFailed(f"{method} {path}: {_describe(response)}")
            return response.json()
        raise AssertionError("unreachable")


def _describe(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"HTTP {response.status_code} ({error['code']}): {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
