"""Geography: where an agent's users are and where the agent should live. The pure
follow-the-user policy (:mod:`cloche.geo.follow`) and the geo simulator that measures it
(:mod:`cloche.geo.sim`) live here so the fleet and the simulator share one decision."""
