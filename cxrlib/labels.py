"""Canonical labels shared by every data source."""

NORMAL = "normal"
VIRAL = "viral_pneumonia"
COVID = "covid19"
BACTERIAL = "bacterial_pneumonia"
LUNG_OPACITY = "lung_opacity"
OTHER = "other"

CANONICAL_LABELS = (NORMAL, VIRAL, COVID, BACTERIAL, LUNG_OPACITY, OTHER)
