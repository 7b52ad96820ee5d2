"""Image quality metrics (PSNR/SSIM, LPIPS, DISTS, NIQE, BRISQUE) and the ``evaluate`` driver.

Never imported by model code. Submodules are imported on use; this file stays light.
"""
