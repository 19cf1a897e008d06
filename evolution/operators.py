"""The names of the search's genetic operators, defined here once.

Every name below is what the trial log's ``operator`` column, the lineage tags and the
config's ``operators.crossover_weights`` / ``operators.mutation_weights`` say. Each genome
family implements every crossover and mutation name (``evolution/families/<family>.py``;
:func:`evolution.families.crossover` and :func:`evolution.families.mutate` dispatch on the
genome's family, and a crossover mates two genomes of one family only).
"""
from __future__ import annotations

INIT = "init"  # a random genome of generation 0
REPRODUCTION = "reproduction"  # an unchanged copy of a parent
IMMIGRANT = "immigrant"  # a random genome in a later generation (operators.immigrant_probability)
MIGRATION = "migration"  # an individual received from the previous island on the ring
CROSSOVERS = ("crossover_uniform", "crossover_swap")
MUTATIONS = ("mutate_gaussian", "mutate_categorical", "mutate_add_condition", "mutate_drop_condition")
OPERATOR_NAMES = (INIT, *CROSSOVERS, *MUTATIONS, REPRODUCTION, IMMIGRANT, MIGRATION)
