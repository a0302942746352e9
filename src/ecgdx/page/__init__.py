"""Page understanding: everything that reads the picture of a printed ECG page, numpy and OpenCV only.

A picture goes through these modules in this order (``ecgdx.inference.Predictor`` and
``ecgdx.signals.digitize`` both follow it):

1. ``preprocessing.load_page`` decodes it within size limits (large JPEGs at reduced size);
2. ``normalize.normalize_page`` straightens a photo: the sheet against a darker table, 90/180/270
   degree turns (``orientation``), uneven lighting, tilt, perspective from the page's own lines;
3. ``layout`` finds the calibration pulses, trace rows, separators and lead panels, and re-draws
   the leads into the template-free canonical page the bundled model reads;
4. ``preprocessing.preprocess_with_details`` makes the model input (canonical page, or the cropped
   trace area without header and footer text);
5. ``gate.assess_page`` decides whether the picture is an ECG page the model may read.

``analysis.PageAnalysis`` is the page at the working scale (flattened paper, ink, components,
calibration pulses), each computed once and read by the crop and the layout alike; ``primitives``
holds the measurements the steps share (ink and grid levels, pulses, text lines, skew). No module here imports torch or Albumentations (``tests/test_torch_free.py``).
"""
