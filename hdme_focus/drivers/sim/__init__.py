"""The simulated instrument (stage, camera, clock) and its scenes."""

from hdme_focus.drivers.sim.sim import SimCamera, SimClock, SimStage, open_sim

__all__ = ["SimCamera", "SimClock", "SimStage", "open_sim"]
