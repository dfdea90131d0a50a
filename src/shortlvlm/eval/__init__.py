"""Evaluation: answer benchmark questions with a model and score them."""
