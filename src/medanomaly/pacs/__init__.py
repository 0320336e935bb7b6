"""PACS link: DICOMweb client (Orthanc), DICOM SR/SEG/Secondary Capture writers, an outbox and pull/score/push.

Import the submodules you need (``medanomaly.pacs.client``, ``.sync``, ...); nothing is imported here so that
``import medanomaly`` works without the ``pacs`` extra (``pip install medanomaly[pacs]``).
"""
