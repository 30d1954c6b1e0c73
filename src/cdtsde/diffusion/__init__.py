"""Diffusion pieces shared by every diffusion method, as pure functions and small classes over any
denoiser: noise schedules (`schedule`), forward processes (`domain_shift`) and samplers (`sampler`)."""
