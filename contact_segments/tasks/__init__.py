"""Celery: the app factory, the tasks, the beat schedule, and the dispatcher that sends work.

Nothing connects at import time; :func:`create_celery_app` builds an app from configuration.
"""

from .dispatch import CeleryDispatcher, dispatcher_from_env

__all__ = ["CeleryDispatcher", "dispatcher_from_env"]
