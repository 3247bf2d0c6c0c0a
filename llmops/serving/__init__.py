"""Serving on NVIDIA Triton Inference Server: model repository, embedded server, deploy, client."""
