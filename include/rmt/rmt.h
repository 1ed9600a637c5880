#pragma once
// Everything of the rmt library.
#include "rmt/checkpoint.h"
#include "rmt/classifier.h"
#include "rmt/config.h"
#include "rmt/dense_backbone.h"
#include "rmt/image.h"
#include "rmt/model.h"
#include "rmt/npy.h"
#include "rmt/ops.h"
#include "rmt/preprocess.h"
#include "rmt/state_dict.h"
#include "rmt/summary.h"
#include "rmt/version.h"
