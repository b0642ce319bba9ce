"""The unit of work: one database transaction that rolls back unless committed.

Service operations also record the work that must follow their change (rebuild a segment,
deliver events, ...) as commands; :meth:`UnitOfWork.commit` hands them to the dispatcher once
the transaction is durable, never before, so no worker acts on a change that did not happen.
Only work that waits in rows committed before (:meth:`UnitOfWork.add_waiting`) may go to the
workers sooner.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ..storage import make_session_factory
from .commands import Command, Dispatcher


class UnitOfWork:
    """``with uow: ...; uow.commit()`` - anything not committed when the block ends is rolled back.

    A unit of work can be entered again after it ends, for the next transaction.
    """

    session: Session

    def __init__(self, session_factory: sessionmaker[Session], dispatcher: Dispatcher | None = None) -> None:
        self.session_factory = session_factory
        self.dispatcher = dispatcher
        self._pending: list[Command] = []

    @classmethod
    def for_engine(cls, engine: Engine, dispatcher: Dispatcher | None = None) -> UnitOfWork:
        return cls(make_session_factory(engine), dispatcher)

    def fresh(self) -> UnitOfWork:
        """Another unit of work on the same database and dispatcher (for follow-up work)."""
        return UnitOfWork(self.session_factory, self.dispatcher)

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    def __enter__(self) -> UnitOfWork:
        self.session = self.session_factory()
        self._pending = []
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._pending = []
        try:
            self.session.rollback()
        finally:
            self.session.close()

    def add_command(self, command: Command) -> None:
        """Record work to dispatch once this transaction commits."""
        self._pending.append(command)

    def add_waiting(self, command: Command) -> None:
        """Record work that is waiting already, in committed rows, whatever this transaction
        does (more pending contacts than it takes, say).  On PostgreSQL a dispatcher that runs
        work elsewhere gets it at once, so another worker starts on it while this transaction
        runs; otherwise it is dispatched after the commit, like any command (on SQLite another
        writer would only wait for this transaction)."""
        elsewhere = getattr(self.dispatcher, "runs_elsewhere", False)  # a host's own may not say
        if self.dispatcher is not None and elsewhere and self.dialect == "postgresql":
            self.dispatcher.dispatch([command])
        else:
            self.add_command(command)

    @property
    def pending_commands(self) -> tuple[Command, ...]:
        """The commands this transaction will dispatch when it commits."""
        return tuple(self._pending)

    def commit(self) -> None:
        self.session.commit()
        commands, self._pending = self._pending, []
        if commands and self.dispatcher is not None:
            self.dispatcher.dispatch(commands)
