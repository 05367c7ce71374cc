"""Cross-lingual text stack of Med-UniC (Sec. 3.2): vocabulary extension, tokenisation, MLM masking, prompts.

Submodules (imported on use, so that importing :mod:`monai_medunic.text` stays cheap):

* :mod:`~monai_medunic.text.vocab`: ``build_base_model``, ``extend_vocabulary``, ``medunic build-vocab``;
* :mod:`~monai_medunic.text.fertility`: tokenizer fertility and ``[UNK]`` rate per language;
* :mod:`~monai_medunic.text.tokenize`: ``load_tokenizer``, ``TokenizeReport`` / ``TokenizeReportd``;
* :mod:`~monai_medunic.text.masking`: BERT 15% (80/10/10) masking, ``RandMaskTokens`` / ``RandMaskTokensd``;
* :mod:`~monai_medunic.text.prompts`: bilingual zero-shot prompts and finding names;
* :mod:`~monai_medunic.text.languages`: language-code validation.
"""
