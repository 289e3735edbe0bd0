"""The exceptions pgqueue-lab raises.

Every error a learner can cause with bad input is raised *before* anything is sent to the
database, so a bad call never leaves the queue half-changed.
"""

from __future__ import annotations


class QueueError(Exception):
    """Base class of every pgqueue-lab error."""


class InvalidInputError(QueueError, ValueError):
    """An argument is not acceptable (bad job type, payload, schema name, batch size...).

    It is a :class:`ValueError` too, so ``except ValueError`` catches it.
    """


class DatabaseUnavailableError(QueueError):
    """The database could not be reached.

    The message names host, port and database (never the password) and says what to do.
    """


class PermanentJobError(QueueError):
    """Raise it from a handler when retrying cannot help (a malformed payload, say).

    The job goes straight to ``failed`` (the dead-letter state) instead of using up its
    remaining attempts.
    """


class QueueNotFoundError(QueueError):
    """The queue's schema or ``jobs`` table does not exist in this database.

    The message names the schema and says to run ``Queue(schema).create(conn)`` first.
    """


class WorkerError(QueueError):
    """A worker thread stopped on an error it could not handle (not a handler's error, which
    fails only its job, nor a lost connection, which the thread survives).

    :meth:`pgqueue_lab.Worker.run` raises it once every thread has stopped; the jobs the thread
    held were recorded or released first (or return to ``pending`` when their lease expires).
    """


class CourseError(QueueError):
    """A folder or notebook given to ``pgqueue-lab course``, ``lab`` or ``check`` cannot be used
    (missing, not a notebook, not writable), or a tool these commands need is not installed.

    The message names the path or the missing package and what to do.
    """


class ClassroomError(QueueError):
    """``pgqueue-lab classroom`` cannot do what was asked: the role may not create roles and
    databases, the server has too few connections for the class, a name is taken by something
    ``create`` did not make, or the roster lacks a kept student's password.

    The message says what to change.
    """
