"""Image region features for UNIMO (paper §2.1, "visual representation"): Faster R-CNN regions from PaddleDetection.

``paddledet_compat`` makes paddledet 2.6.0 run on paddle 3.x; ``detector`` builds the detector and extracts
bottom-up-attention style regions. Neither is imported here, so ``import paddle_unimo.regions`` stays cheap
and does not need paddledet.
"""
