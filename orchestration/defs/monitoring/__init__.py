"""Drift reports and the sensor that turns detected drift into a retraining run."""
