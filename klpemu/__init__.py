"""The user surfaces of klpemu, on top of the livepatch core (klp) and the
machine (emu): the `klpemu` CLI, the scenario language, the pytest plugin,
state and blocking reports, and module builds (gcc, klp-convert).

Data flows down: klpemu imports klp and emu, never the reverse.
"""
