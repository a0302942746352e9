"""Settings modules: ``base`` (shared), ``local`` (a workstation, ``ecgdx serve``), ``production``, ``test``."""
