"""The autoscaler: a pure scaling policy (``policy.decide``) and, around it, the loop that observes and acts."""
from hybrid.autoscale.policy import Decision, Observation, PolicyState, decide

__all__ = ["Decision", "Observation", "PolicyState", "decide"]
