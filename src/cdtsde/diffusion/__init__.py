"""What every diffusion method shares, as pure functions and small classes over any denoiser: the
Gaussian-path protocol, its one posterior-step sampler (`gaussian_path`), noise schedules (`schedule`) and
the paths of the bridges (`bridge_paths`) and of DDPM (`ddpm`). A method's own process lives in its folder
(CDTSDE's domain-shift path and sampler: `cdtsde.methods.cdtsde`)."""
