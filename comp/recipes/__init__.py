"""More from the same data: several seeds per fold, pseudo-labelled test rows, distillation from a teacher.

SWA and progressive resizing live in the engine (comp/train/engine.py, comp/train/parts.py); what needs its own
artifacts or rules is here: seeds.py (train.seeds), pseudo.py (`comp pseudo`, pseudo rows per fold),
distill.py (train.distill: teacher targets that no model trained on the student's validation rows made),
targets.py (the per-row training targets both feed to the engine).
"""
