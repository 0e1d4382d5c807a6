
By0J0BÒ=pHVBñ<ŠUÊPµB»=TdaÝ4–=i.3e.<><)LÆD¥3ê;©GD