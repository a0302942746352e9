"""Template access to the criteria-based findings of a result (``services.digitization_findings``).

The result page's view hands the template the analysis and its digitisation; the findings are a
pure function of those, so the template asks for them here instead of each view computing them.
"""

from __future__ import annotations

from django import template

from diagnosis import services

register = template.Library()


@register.simple_tag
def digitization_findings(digitization, analysis):
    """``{% digitization_findings digitization analysis as findings %}``: the findings dict or None."""
    return services.digitization_findings(digitization=digitization, label=getattr(analysis, "label", None))
