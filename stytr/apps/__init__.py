"""The ipywidgets apps: the interactive editor and the user-study runner.

* :mod:`~stytr.apps.editor` -- :class:`EditorApp`, sliders over an :class:`~stytr.editing.session.EditSession`.
* :mod:`~stytr.apps.study` -- :class:`UserStudyApp`, a forced-choice page that appends answers to a vote file.
* :mod:`~stytr.apps.synthetic_study` -- stand-in study material and a scripted participant, to try the runner.
* :mod:`~stytr.apps.common` -- what both apps use: PNG encoding for image widgets, a debouncer, closing widgets.

The analysis of a study (statistics, tables, plots) is in :mod:`stytr.eval`, not here.
"""
