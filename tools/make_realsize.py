#!/usr/bin/python3
"""Makes a real-size detector image from a radiograph: a 3000x2500 (width x
height) 12-bit DX DICOM (Part 10, Explicit VR Little Endian, MONOCHROME2,
BitsAllocated 16, BitsStored 12, ~15 MB) and the same pixels as a 16-bit
grayscale PNG, for the real-size section of `make bench` (tools/bench_realsize.sh).

  make_realsize.py IN OUT.dcm OUT.png

The radiograph is resized (bicubic) to 3000x2500 and mapped to 0..4095. The
patient module holds obviously fake values. Needs Debian's python3-pydicom,
python3-numpy and python3-pil (/usr/bin/python3).
"""
import datetime
import sys

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

W, H = 3000, 2500
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def main():
    src, dcm, png = sys.argv[1:4]
    g = Image.open(src).convert("F").resize((W, H), Image.BICUBIC)
    a = np.asarray(g, dtype=np.float64)
    a = (a - a.min()) / max(1e-9, a.max() - a.min())
    pix = np.clip(np.rint(a * 4095.0), 0, 4095).astype(np.uint16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    sop = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(dcm, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    now = datetime.datetime(2024, 1, 2, 3, 4, 5)
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "CHEXD^BENCH^PATIENT"
    ds.PatientID = "CHEXD-BENCH-0001"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = H, W
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelData = pix.tobytes()
    ds.save_as(dcm, write_like_original=False)
    Image.fromarray(pix.astype(np.uint16)).save(png)  # mode I;16: 16-bit gray PNG


if __name__ == "__main__":
    main()
