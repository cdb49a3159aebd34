"""The controller's API: the config (``/v1/config``, history, rollback) and the store's health."""

from __future__ import annotations

from typing import Any

from mesh.controller._api import ApiRequest
from mesh.controller._app_base import HandlerBase, _object, log
from mesh.errors import ConfigError, StoreError
from mesh.net import ApiError, ApiResponse


class ConfigHandlers(HandlerBase):
    # -- config ------------------------------------------------------------------

    async def get_config(self, request: ApiRequest) -> ApiResponse:
        self._require_peer(request)
        state = self.state
        return ApiResponse(200, {"version": state.config_version, "config": state.config.to_dict()})

    async def apply_config(self, request: ApiRequest) -> ApiResponse:
        operator = self._require_operator(request)
        body = _object(request.json())
        data = body.get("config")
        if not isinstance(data, dict):
            raise ApiError(400, 'expected {"config": {...}}')
        source = str(body.get("source") or "applied config")
        try:
            config = self.state.check_config(data, source)
        except ConfigError as exc:
            issues = [str(i) for i in getattr(exc, "issues", ())] or [exc.message]
            log.warning("rejected a config from %s: %s", operator, "; ".join(issues))
            return ApiResponse(
                400, {"error": "the config is invalid; the previous one stays in force", "issues": issues}
            )
        version, changed = await self._write_config(config, source, str(operator))
        return ApiResponse(200, {"version": version, "changed": changed})

    async def apply_file(self, data: dict[str, Any], source: str) -> tuple[int, bool]:
        """`mesh up mesh.toml`: the file's config, as if the host's operator applied it."""
        from mesh.controller._server import operator_name

        return await self._write_config(self.state.check_config(data, source), source, f"mesh up ({operator_name()})")

    async def _write_config(self, config: Any, source: str, operator: str) -> tuple[int, bool]:
        """Into the store, then in force here; other controllers learn it by their watch."""
        self._refuse_if_read_only("apply a config")
        try:
            version, changed = await self.durable.apply_config(
                config, source, operator, at_least=self.newest_proxy_config + 1
            )
        except StoreError as exc:
            raise self._read_only_error("apply a config", exc.message) from None
        if changed:
            log.info("config version %d applied by %s (%s)", version, operator, source)
            self.changed()
        return version, changed

    async def config_history(self, request: ApiRequest) -> ApiResponse:
        self._require_reader(request)
        try:
            records = await self.durable.history()
        except StoreError as exc:
            raise ApiError(503, f"cannot read the config history: {exc.message}", exc.hint) from None
        current = self.state.config_version
        return ApiResponse(
            200,
            {
                "current": current,
                "kept": len(records),
                "versions": [{**r.summary(), "current": r.version == current} for r in records],
            },
        )

    async def rollback_config(self, request: ApiRequest) -> ApiResponse:
        operator = self._require_operator(request)
        body = _object(request.json())
        target = body.get("version")
        if isinstance(target, bool) or not isinstance(target, int) or target < 1:
            raise ApiError(400, 'expected {"version": N} with N a config version (1 or more)')
        try:
            record = await self.durable.config_at(target)
        except StoreError as exc:
            raise ApiError(503, f"cannot read config version {target}: {exc.message}", exc.hint) from None
        if record is None:
            raise ApiError(
                404,
                f"config version {target} is not kept (the store keeps the last versions only)",
                "`mesh config history` lists the versions it has",
            )
        try:
            config = self.state.check_config(record.config, f"config version {target}")
        except ConfigError as exc:
            raise ApiError(409, f"config version {target} is not valid for this mesh any more: {exc.message}") from None
        version, changed = await self._write_config(config, f"rollback to version {target}", str(operator))
        return ApiResponse(200, {"version": version, "changed": changed, "rolled_back_to": target})

    async def store_health(self, request: ApiRequest) -> ApiResponse:
        self._require_reader(request)
        try:
            health = await self.durable.check_health()  # fresh: `mesh check` right after a member died
        except StoreError as exc:
            raise ApiError(503, exc.message, exc.hint) from None
        return ApiResponse(
            200,
            {
                **health.to_dict(),
                "read_only_reason": self.durable.read_only_reason,
                "config_version": self.state.config_version,
                "controllers": sorted(self.state.controllers),
                "this_controller": self.address,
            },
        )
