#!/usr/bin/python3
"""Makes a DX DICOM file (Part 10, Explicit VR Little Endian, MONOCHROME2, 8-bit)
from a real radiograph in PNG or JPEG, as a digital X-ray modality would send it.

  make_dx.py IN.png OUT.dcm [--study UID] [--series UID] [--sop UID] [--number N]
                            [--modality DX] [--view PA]

Used by the deploy tests (Orthanc end to end, folder tool). The patient module is
filled with obviously fake values; the tests check they never leave chexd.
Needs Debian's python3-pydicom, python3-numpy and python3-pil (/usr/bin/python3).
"""
import argparse
import datetime

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
FAKE_PATIENT = {"PatientName": "CHEXD^TEST^PATIENT", "PatientID": "CHEXD-TEST-0001",
                "PatientBirthDate": "19230405", "PatientSex": "O"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--study", default=None)
    ap.add_argument("--series", default=None)
    ap.add_argument("--sop", default=None)
    ap.add_argument("--number", type=int, default=1)
    ap.add_argument("--modality", default="DX")
    ap.add_argument("--view", default="PA")
    a = ap.parse_args()

    pix = np.asarray(Image.open(a.src).convert("L"), dtype=np.uint8)
    sop_class = CR_IMAGE_STORAGE if a.modality == "CR" else DX_FOR_PRESENTATION
    sop = a.sop or generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = FileDataset(a.dst, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    now = datetime.datetime(2024, 1, 2, 3, 4, 5)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = a.study or generate_uid()
    ds.SeriesInstanceUID = a.series or generate_uid()
    for k, v in FAKE_PATIENT.items():
        setattr(ds, k, v)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = "CHEXD%04d" % a.number
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = a.number
    ds.Modality = a.modality
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = a.view
    ds.PatientOrientation = ["L", "F"] if a.view == "PA" else ["R", "F"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pix.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pix.tobytes()
    ds.save_as(a.dst, write_like_original=False)


if __name__ == "__main__":
    main()
