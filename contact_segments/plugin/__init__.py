"""Plugging the engine into a host, with pluggy.

::

    from contact_segments.plugin import create_plugin_manager, hookimpl

    class MyPlatform:
        @hookimpl
        def segments_membership_changed(self, events):
            for event in events:
                ...  # start workflows, update audiences

    pm = create_plugin_manager()
    pm.register(MyPlatform())
    pm.hook.segments_workspace_created(workspace_id="ws-1", name="Acme", timezone="Asia/Kuala_Lumpur")
    pm.hook.segments_contact_saved(workspace_id="ws-1", snapshot={"id": "c1", "version": 1, "tags": ["vip"]})

The specs are in :mod:`.hookspecs`.  The engine itself is a plugin like any other, found through
the ``contact_segments`` entry point; so is any host plugin installed with one, and workers also
load the plugins named in ``SEGMENTS_HOST_PLUGINS`` (``module:attribute``, comma-separated).
"""

from __future__ import annotations

import importlib
import os

import pluggy

from ..service.settings import Settings
from . import hookspecs
from .engine import SegmentsEngine, hookimpl
from .hookspecs import PROJECT, hookspec

ENTRY_POINT_GROUP = "contact_segments"
ENGINE_ENTRY_POINT = "engine"
HOST_PLUGINS_ENV = "SEGMENTS_HOST_PLUGINS"

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECT",
    "SegmentsEngine",
    "Settings",
    "create_plugin_manager",
    "hookimpl",
    "hookspec",
]


def create_plugin_manager(settings: Settings | None = None, *, plugins: tuple[object, ...] = ()) -> pluggy.PluginManager:
    """A plugin manager with our hook specs, the engine, installed host plugins, and ``plugins``.

    Then ``segments_configure`` is called (historic: plugins registered later receive it too).
    """
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    # Each manager gets an engine of its own; the entry point's shared instance is for hosts
    # that build their plugin manager themselves.
    manager.register(SegmentsEngine(), name=ENGINE_ENTRY_POINT)
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in (*_plugins_from_env(), *plugins):
        manager.register(plugin)
    manager.hook.segments_configure.call_historic(
        kwargs={"pluginmanager": manager, "settings": settings or Settings.from_env()}
    )
    return manager


def _plugins_from_env() -> list[object]:
    """The plugins named by ``SEGMENTS_HOST_PLUGINS``: ``package.module:attribute``, comma-separated.

    The attribute may be a plugin object, or a class, instantiated without arguments.
    """
    found = []
    for spec in filter(None, (part.strip() for part in os.environ.get(HOST_PLUGINS_ENV, "").split(","))):
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
            plugin = getattr(module, attribute) if attribute else module
        except (ImportError, AttributeError) as error:
            raise RuntimeError(f"{HOST_PLUGINS_ENV}: cannot load plugin {spec!r}: {error}") from error
        found.append(plugin() if isinstance(plugin, type) else plugin)
    return found
