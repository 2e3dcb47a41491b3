"""From demographics to cases: the cascaded sampler, its per-stage calibration, and the
case-generator protocol shared with the phantom."""
