
By0J0B=‰AŠ@$?C¿F¬EEUCvA@EÌE®;KA\AJH“CQ@þ@–DvDØEÚE