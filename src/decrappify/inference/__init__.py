"""Running a trained model: the restorer, tiling, self-ensembles, torch/ONNX runners, export, the model zoo, speed."""
