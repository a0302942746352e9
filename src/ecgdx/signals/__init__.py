"""Signals: from a page to 12 leads in mV and back, and what is measured on them.

``render`` draws a 12-lead record as a paper page with its exact pixel mapping; ``digitize`` reads
the leads of a page picture back (using ``ecgdx.page``); ``measure`` gives heart rate, PR, QRS, QT,
QTc, axis and ST levels with plausibility flags; ``findings`` states the standard criteria (ST
elevation by territory, Q waves, rate, rhythm, wide QRS, long QTc) from those measurements;
``features`` turns them into resolution-independent features for the measurement model;
``commands`` is the CLI (``ecgdx render``, ``render-dataset``, ``digitize``). Torch-free.
"""
