"""Run a tensor function compiled by ``torch.compile`` where that works, eagerly where it does not."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def compiled_or_eager(fn, compile: bool, eager=None):
    """``fn`` compiled with dynamic shapes when ``compile`` is set; ``eager`` (default ``fn``) when not, or when
    compiling or running it fails."""
    eager = eager or fn
    if not compile:
        return eager
    try:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        compiled = torch.compile(fn, dynamic=True)
    except Exception as exc:  # pragma: no cover - depends on the toolchain
        log.warning("torch.compile unavailable (%s); rendering eagerly", exc)
        return eager
    state = {"ok": True}

    def run(*args, **kw):
        if state["ok"]:
            try:
                return compiled(*args, **kw)
            except Exception as exc:  # pragma: no cover - depends on the toolchain
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("compiled %s failed (%s); running it eagerly", fn.__name__, first_line)
                state["ok"] = False
        return eager(*args, **kw)

    return run
