"""Training: Ray Tune + Optuna over model families, MLflow tracking and registry, gates."""
