"""freqcap's DAG files, shipped inside the package so an installed wheel carries them.

Point the scheduler's dags folder (or a local DAG bundle) at this directory: `freqcap dags-folder` prints it.
Each file only schedules and wires; every task calls one function of `freqcap.jobs`.
"""
