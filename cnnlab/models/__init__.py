"""Models: reusable blocks, the efficient CNN and the course baselines, all built from config."""
