"""warnd's bundled channel plugins (shipped as the import package ``warnd_channels``).

The folder is ``channels/`` in the repository; it installs as
``warnd_channels`` because the import name ``channels`` belongs to Django
Channels on PyPI and two distributions must never fight over one name.
Plugins register through the ``warnd.channels`` entry-point group.
"""
