"""Statistics of blinded reader studies (visual Turing tests), numpy/scipy only.

Modules: ``binary`` (accuracy, sensitivity, specificity, exact CIs, binomial and TOST tests),
``roc`` (empirical AUC, DeLong), ``auc_cov`` (jackknife / DeLong / unbiased AUC covariance),
``orh`` (Obuchowski-Rockette-Hillis MRMC analysis), ``agreement`` (Fleiss and Cohen kappas,
test-retest), ``likert`` (realism ratings), ``learning`` (accuracy over trials) and
``summary`` (:func:`~studies.analysis.summary.analyze`, everything at once, JSON-ready).

Convention everywhere: truth 1 = synthetic, score higher = more confident synthetic.
"""
