"""Test-only stand-in for ROS 2 `launch` (not installable from PyPI/Debian).

Records what a launch file builds; test/launch_runner.py turns its Node actions into real
processes. Only the subset our launch files use is provided.
"""
from . import actions, substitutions  # noqa: F401


class LaunchDescription:
    def __init__(self, initial_entities=None):
        self.entities = list(initial_entities or [])

    def add_action(self, action):
        self.entities.append(action)
