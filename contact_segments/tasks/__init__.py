"""Celery: the app factory, the tasks, the beat schedule, and the dispatcher that sends work.

Nothing connects at import time; :func:`create_celery_app` builds an app from configuration.
"""

from .app import create_celery_app
from .dispatch import CeleryDispatcher, dispatcher_from_env
from .schedule import BEAT_SCHEDULE

__all__ = ["BEAT_SCHEDULE", "CeleryDispatcher", "create_celery_app", "dispatcher_from_env"]
