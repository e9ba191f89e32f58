"""The dependencies routes declare: the request's session, the caller, and the permission.

`SessionDep` is one transaction per request. It is function-scoped: FastAPI closes it before
the answer is sent, so a 2xx goes out only after COMMIT succeeded and a failed COMMIT answers
5xx through the error handlers (a request-scoped yield dependency exits after the response
has gone out: the client would be told "done" before a commit that may then fail). Realtime
events registered with `after_commit` run after the commit, still before the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.auth.principal import AuthPrincipal, authenticate, bearer_token
from outreach.core.errors import Forbidden
from outreach.db.base import run_after_commit
from outreach.state import State, StateDep, get_state


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """The request's session: committed when the handler returns, rolled back if it raises."""
    async with state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
    run_after_commit(session)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def current_principal(request: Request, state: StateDep) -> AuthPrincipal:
    return await authenticate(state.verifier, bearer_token(request.headers.get("authorization")))


Principal = Annotated[AuthPrincipal, Depends(current_principal)]


def require(resource: str, action: str) -> Any:
    """Dependency: the caller's token must carry a role allowed `action` on `resource`."""

    async def dependency(principal: Principal, state: StateDep) -> AuthPrincipal:
        if not state.authorizer.allowed(principal.roles, resource, action):
            raise Forbidden(f"Your role may not {action} {resource}")
        return principal

    dependency.__name__ = f"require_{resource}_{action}"
    return Depends(dependency)


__all__ = ["Principal", "SessionDep", "State", "StateDep", "current_principal", "get_state"]
