"""MLflow lineage of evolution runs: one module per job.

==============  ===========================================================================
``tracking``    where lineage goes: the run config's ``tracking:`` section and its overrides
                (``--tracking-uri``, ``$MLFLOW_TRACKING_URI``, ...), resolved once
``run``         ``RunLineage``: how ``evolve run`` wires the logger into the search
``logger``      ``LineageLogger``: queues a run's lineage from the driver (never imports MLflow)
``ops``         the operations (replayable JSON), the spool ``RUN_DIR/mlflow_spool/``
``sender``      the sender process (``python -m evolution.lineage.sender``, nice 10)
``client``      ``OpApplier``: operations through ``MlflowClient``, idempotently
``template``    the pyfunc model (``serving/model.py``) saved once, copied per strategy
``sync``        ``evolve sync``: replay a spool; log a run directory after the fact
``data``        reading a run directory: ``result.json``, the trial log, ancestry
``plots``       fitness over generations, the lineage graph
``equity``      equity curves of the top strategies, for ``notebooks/lineage.ipynb``
==============  ===========================================================================

Nothing is imported here: the driver imports what it uses (``run``, ``logger``, ``tracking``
and below), the sender process what it needs (``sender``, ``client``, ``template``).
"""
