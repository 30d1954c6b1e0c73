"""The recipe study (issue 30, part 3): the cheapest route to convergence, measured, per family.

    python -m benchmarks.recipes [--families ...] [--methods ...] [--levers ...] [--jobs N]
        [--data-root DIR] [--output DIR] [--smoke]
    python -m benchmarks.recipes --report-only [--output DIR]

Each run is one representative of a family (CDTSDE fields and bridges: cdtsde-linear, bbdm; GANs: pix2pix;
the DDPM prior; the inversion baseline) with one lever changed against the family's baseline, the suite's
cpu-scale settings (`plan`). It trains in its own process with one torch thread, validating every few hundred
images on 2 training subjects held out as a val split (the suite's test subjects unchanged, never scored here),
and records per validation: step, images seen, the training process's CPU seconds, the monitored headline and
the fixed-draw validation loss. Finished runs are skipped, killed ones resume exactly. The report (`report`)
draws the curves against images and CPU minutes, tabulates best value, plateau and the CPU minutes to 95% of
it with each lever's verdict, and picks each family's recipe by validation alone.
"""
