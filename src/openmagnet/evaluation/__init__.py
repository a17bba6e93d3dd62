"""Evaluation of generated music (optional extra `eval`: librosa, scikit-learn).

`evaluation.adherence` measures whether audio follows its text: tempo, key and instrument families estimated
from the audio and compared with the prompt's labels. Nothing here is imported by `import openmagnet`; the
heavy libraries are imported inside the functions that need them.
"""
