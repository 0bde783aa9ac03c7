"""Namespace under which every project of ``projects/`` is installed.

``projects/<Name>/<package>`` is installed as ``segtron.projects.<package>`` by ``setup.py``
(editable or not). The core never imports from here; only tools and other projects do.
"""
